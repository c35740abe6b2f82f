//! `bookmesh-token`: prints a development token, signed with the local key `make run` created
//! (`data/pki/jwt.key`), and nothing else on stdout: `make -s token ROLE=librarian`.
//!
//! Development only. A real deployment takes tokens from an identity provider
//! (docs/security.md); services never see this key.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bookmesh::auth::DevTokenIssuer;
use bookmesh::config::AuthArgs;
use clap::Parser;

/// Prints a development token for the local mesh.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `member`, `librarian` or `admin`.
    #[arg(long, required_unless_present = "init_keys")]
    role: Option<String>,

    /// Only make the development key pair (`jwt.key`, `jwt.pub`) if it is missing, and print
    /// nothing (make kind-up hands the public half to the cluster).
    #[arg(long)]
    init_keys: bool,

    /// The token's subject: a member's id for `member` (required), a staff name otherwise.
    #[arg(long)]
    subject: Option<String>,

    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: i64,

    /// Where the development key is.
    #[arg(long, env = "BOOKMESH_PKI_DIR", default_value = "data/pki")]
    pki_dir: PathBuf,

    /// Issuer and audience, as the services check them.
    #[command(flatten)]
    auth: AuthArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.init_keys {
        std::fs::create_dir_all(&args.pki_dir)?;
        bookmesh::identity::pki::ensure_token_keys(&args.pki_dir)?;
        return Ok(());
    }
    let role = args.role.unwrap_or_default();
    let subject = match (role.as_str(), args.subject) {
        ("member", Some(member)) if !member.trim().is_empty() => member,
        ("member", _) => {
            bail!("a member token needs the member's id: ROLE=member MEMBER=<member_id>")
        }
        ("librarian" | "admin", Some(subject)) => subject,
        ("librarian" | "admin", None) => format!("dev-{role}"),
        (other, _) => bail!("unknown role `{other}`: member, librarian or admin"),
    };
    let issuer = DevTokenIssuer::from_pki(
        &args.pki_dir,
        &args.auth.token_issuer,
        &args.auth.token_audience,
    )
    .with_context(|| {
        format!(
            "no development key in {} (make run creates it)",
            args.pki_dir.display()
        )
    })?;
    println!("{}", issuer.issue(&subject, &[&role], args.lifetime));
    Ok(())
}
