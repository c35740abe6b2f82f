//! The callers of the table and, per RPC, who the security model lets call it.

use tonic::Code;

/// The callers of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Nobody,
    WrongWorkload,
    RightWorkload,
    MemberSelf,
    MemberOther,
    Librarian,
    Admin,
    ExpiredToken,
    ForeignIssuer,
}

pub(crate) const CALLERS: [Caller; 9] = [
    Caller::Nobody,
    Caller::WrongWorkload,
    Caller::RightWorkload,
    Caller::MemberSelf,
    Caller::MemberOther,
    Caller::Librarian,
    Caller::Admin,
    Caller::ExpiredToken,
    Caller::ForeignIssuer,
];

/// Who may call one RPC, by the security model.
pub(crate) struct Allowed {
    pub(crate) anyone: bool,
    pub(crate) workload: Option<&'static str>,
    pub(crate) roles: &'static [&'static str],
    pub(crate) member_self: bool,
}

pub(crate) const OPEN: Allowed = Allowed {
    anyone: true,
    workload: None,
    roles: &[],
    member_self: false,
};

impl Allowed {
    pub(crate) fn expected(&self, caller: Caller, allowed_code: Code) -> Option<Code> {
        use Caller::*;
        if self.anyone {
            return Some(allowed_code);
        }
        let allowed = match caller {
            Nobody | ExpiredToken | ForeignIssuer => return Some(Code::Unauthenticated),
            // Not every RPC has a workload that may call it.
            RightWorkload => return self.workload.map(|_| allowed_code),
            WrongWorkload => false,
            MemberSelf => self.member_self || self.roles.contains(&"member"),
            MemberOther => self.roles.contains(&"member"),
            Librarian => self.roles.contains(&"librarian"),
            Admin => self.roles.contains(&"admin"),
        };
        Some(if allowed {
            allowed_code
        } else {
            Code::PermissionDenied
        })
    }
}
