//! Fault injection: failures switched on at run time, one service at a time, to watch the
//! mesh's defences work: a breaker containing a failing dependency, a saga compensating, the
//! dashboards showing what happened. docs/faults.md lists each fault with the outcome it must
//! produce, and `tests/faults/` proves each one against real processes.
//!
//! Faults are present in every build and refused unless the process was started with
//! `--faults-enabled`. They are switched through the admin port (`GET /faults`,
//! `PUT /faults/<name>` with a JSON body, `DELETE /faults/<name>`; role `admin` once the
//! service verifies tokens) or at start with `--fault <name>=<json>`. Each name holds at most
//! one setting, so the registry is bounded by the closed set of [`FaultKind`]s, and so are the
//! metric labels (`bookmesh_faults_active`, `bookmesh_faults_injected_total`).
//!
//! The faults are process-wide, like the process they break: the server stack asks
//! [`for_call`], the database check and the event consumer ask [`database_outage`],
//! [`poison`], [`event_delay`] and [`duplicate_delivery`], and a saga step names its
//! [`crash_point`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tonic::Code;

/// The longest latency, delay or pattern a fault accepts: a fault must not become a way to
/// park a process for ever or to grow memory.
const MAX_MILLIS: u64 = 60_000;
const MAX_PATTERN_CHARS: usize = 200;

/// The faults there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Calls matching `method` wait `fixed_ms`, or a random time up to `max_ms`, first.
    Latency,
    /// Calls matching `method` are answered with `code`, at `rate`.
    Error,
    /// Calls matching `method` get no answer until their deadline, at `rate`.
    Hang,
    /// The service's database refuses: health goes NOT_SERVING, calls are UNAVAILABLE,
    /// consumers and the relay wait.
    DatabaseOutage,
    /// The consumer's handler rejects events (of `event_type`, or any), at `rate`: after its
    /// retries the event is dead-lettered.
    PoisonEvent,
    /// Each delivered event waits `delay_ms` before it is applied.
    EventDelay,
    /// Each delivered event is delivered a second time, at `rate`.
    DuplicateDelivery,
    /// The process aborts at the named saga step (`point`), as a crash would.
    Crash,
}

impl FaultKind {
    /// Every kind, in the order `GET /faults` lists them.
    pub const ALL: [Self; 8] = [
        Self::Latency,
        Self::Error,
        Self::Hang,
        Self::DatabaseOutage,
        Self::PoisonEvent,
        Self::EventDelay,
        Self::DuplicateDelivery,
        Self::Crash,
    ];

    /// The name in URLs, flags and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Error => "error",
            Self::Hang => "hang",
            Self::DatabaseOutage => "db-outage",
            Self::PoisonEvent => "poison-event",
            Self::EventDelay => "event-delay",
            Self::DuplicateDelivery => "duplicate-delivery",
            Self::Crash => "crash",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// Where a [`FaultKind::Crash`] can strike: the saga steps a crash is interesting at.
pub mod crash_points {
    /// A write committed its change and its outbox row, before the relay published the event.
    pub const AFTER_COMMIT: &str = "after-commit";
    /// A consumer committed an event's effect, before the delivery was acknowledged.
    pub const AFTER_APPLY: &str = "after-apply";
    /// All of them.
    pub const ALL: [&str; 2] = [AFTER_COMMIT, AFTER_APPLY];
}

/// A fault's settings as a client sends them (`PUT /faults/<name>`, `--fault name=<json>`);
/// each kind reads the fields it needs and refuses the rest.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Method pattern: a method name (`GetBook`), a prefix with `*` (`Get*`), or `*` (the
    /// default).
    pub method: Option<String>,
    /// Share of calls or events hit, 0 to 1 (default 1).
    pub rate: Option<f64>,
    /// Latency: always this long.
    pub fixed_ms: Option<u64>,
    /// Latency: a random time up to this long.
    pub max_ms: Option<u64>,
    /// Error: the gRPC code, by name (`UNAVAILABLE`).
    pub code: Option<String>,
    /// Poison event: only events of this type (`bookmesh.rental.v1.ItemRented`).
    pub event_type: Option<String>,
    /// Event delay.
    pub delay_ms: Option<u64>,
    /// Crash: the saga step ([`crash_points`]).
    pub point: Option<String>,
}

/// A validated fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    kind: FaultKind,
    method: String,
    rate: f64,
    latency: Latency,
    code: Code,
    event_type: Option<String>,
    delay: Duration,
    point: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Latency {
    Fixed(Duration),
    UpTo(Duration),
}

impl Fault {
    /// Validates `spec` for `kind`: every field the kind needs, none it does not.
    pub fn new(kind: FaultKind, spec: FaultSpec) -> Result<Self, String> {
        let allowed: &[&str] = match kind {
            FaultKind::Latency => &["method", "rate", "fixed_ms", "max_ms"],
            FaultKind::Error => &["method", "rate", "code"],
            FaultKind::Hang => &["method", "rate"],
            FaultKind::DatabaseOutage => &[],
            FaultKind::PoisonEvent => &["rate", "event_type"],
            FaultKind::EventDelay => &["delay_ms"],
            FaultKind::DuplicateDelivery => &["rate"],
            FaultKind::Crash => &["point"],
        };
        let given = [
            ("method", spec.method.is_some()),
            ("rate", spec.rate.is_some()),
            ("fixed_ms", spec.fixed_ms.is_some()),
            ("max_ms", spec.max_ms.is_some()),
            ("code", spec.code.is_some()),
            ("event_type", spec.event_type.is_some()),
            ("delay_ms", spec.delay_ms.is_some()),
            ("point", spec.point.is_some()),
        ];
        if let Some((field, _)) = given
            .iter()
            .find(|(field, set)| *set && !allowed.contains(field))
        {
            return Err(format!("{} takes no {field}", kind.name()));
        }
        let method = spec.method.unwrap_or_else(|| "*".to_owned());
        if method.is_empty() || method.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!(
                "method must be 1 to {MAX_PATTERN_CHARS} characters"
            ));
        }
        let rate = spec.rate.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&rate) {
            return Err("rate must be between 0 and 1".to_owned());
        }
        let millis = |field: &str, value: u64| {
            if value > MAX_MILLIS {
                Err(format!("{field} must be at most {MAX_MILLIS}"))
            } else {
                Ok(Duration::from_millis(value))
            }
        };
        let latency = match (kind, spec.fixed_ms, spec.max_ms) {
            (FaultKind::Latency, Some(fixed), None) => Latency::Fixed(millis("fixed_ms", fixed)?),
            (FaultKind::Latency, None, Some(max)) => Latency::UpTo(millis("max_ms", max)?),
            (FaultKind::Latency, _, _) => {
                return Err("latency takes one of fixed_ms and max_ms".to_owned());
            }
            _ => Latency::Fixed(Duration::ZERO),
        };
        let code = match (kind, spec.code.as_deref()) {
            (FaultKind::Error, Some(name)) => match code_named(name) {
                Some(Code::Ok) | None => {
                    return Err(format!(
                        "code {name:?} is not a gRPC error code (UNAVAILABLE, INTERNAL, …)"
                    ));
                }
                Some(code) => code,
            },
            (FaultKind::Error, None) => return Err("error takes a code".to_owned()),
            _ => Code::Unknown,
        };
        if let Some(event_type) = &spec.event_type
            && (event_type.is_empty() || event_type.chars().count() > MAX_PATTERN_CHARS)
        {
            return Err(format!(
                "event_type must be 1 to {MAX_PATTERN_CHARS} characters"
            ));
        }
        let delay = match (kind, spec.delay_ms) {
            (FaultKind::EventDelay, Some(delay)) => millis("delay_ms", delay)?,
            (FaultKind::EventDelay, None) => return Err("event-delay takes delay_ms".to_owned()),
            _ => Duration::ZERO,
        };
        let point = match (kind, spec.point) {
            (FaultKind::Crash, Some(point)) if crash_points::ALL.contains(&point.as_str()) => point,
            (FaultKind::Crash, _) => {
                return Err(format!(
                    "crash takes a point: one of {}",
                    crash_points::ALL.join(", ")
                ));
            }
            _ => String::new(),
        };
        Ok(Self {
            kind,
            method,
            rate,
            latency,
            code,
            event_type: spec.event_type,
            delay,
            point,
        })
    }

    /// The fault as `GET /faults` shows it.
    fn describe(&self) -> serde_json::Value {
        let mut shown = serde_json::Map::new();
        match self.kind {
            FaultKind::Latency | FaultKind::Error | FaultKind::Hang => {
                shown.insert("method".into(), self.method.clone().into());
                shown.insert("rate".into(), self.rate.into());
            }
            FaultKind::PoisonEvent | FaultKind::DuplicateDelivery => {
                shown.insert("rate".into(), self.rate.into());
            }
            _ => {}
        }
        match self.kind {
            FaultKind::Latency => match self.latency {
                Latency::Fixed(fixed) => shown.insert("fixed_ms".into(), millis_of(fixed).into()),
                Latency::UpTo(max) => shown.insert("max_ms".into(), millis_of(max).into()),
            },
            FaultKind::Error => shown.insert("code".into(), code_name(self.code).into()),
            FaultKind::PoisonEvent => shown.insert(
                "event_type".into(),
                self.event_type.clone().unwrap_or_else(|| "*".into()).into(),
            ),
            FaultKind::EventDelay => shown.insert("delay_ms".into(), millis_of(self.delay).into()),
            FaultKind::Crash => shown.insert("point".into(), self.point.clone().into()),
            _ => None,
        };
        serde_json::Value::Object(shown)
    }

    fn matches_method(&self, method: &str) -> bool {
        match self.method.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => self.method == method,
        }
    }

    fn strikes(&self) -> bool {
        self.rate >= 1.0 || fastrand::f64() < self.rate
    }
}

fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The code named `name` (`UNAVAILABLE`, `unavailable`, or its number).
fn code_named(name: &str) -> Option<Code> {
    if let Ok(number) = name.parse::<i32>() {
        return (0..=16).contains(&number).then(|| Code::from_i32(number));
    }
    let wanted = name.to_ascii_uppercase();
    (0..=16)
        .map(Code::from_i32)
        .find(|code| code_name(*code) == wanted)
}

fn code_name(code: Code) -> String {
    // `Code`'s Debug is CamelCase (`DeadlineExceeded`); the wire names are SCREAMING_SNAKE.
    let camel = format!("{code:?}");
    let mut name = String::new();
    for (index, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// What the registry knows: whether faults may be set, whose they are, and the active ones.
struct Registry {
    enabled: AtomicBool,
    service: OnceLock<&'static str>,
    active: RwLock<BTreeMap<FaultKind, Fault>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    enabled: AtomicBool::new(false),
    service: OnceLock::new(),
    active: RwLock::new(BTreeMap::new()),
});

fn service() -> &'static str {
    REGISTRY.service.get().copied().unwrap_or("unknown")
}

/// Why a fault could not be set or cleared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The process was not started with `--faults-enabled`.
    #[error(
        "faults are disabled: start the service with --faults-enabled (BOOKMESH_FAULTS_ENABLED=true)"
    )]
    Disabled,
    /// No fault has that name.
    #[error("no fault named {0:?}; the faults are: {names}", names = FaultKind::ALL.map(FaultKind::name).join(", "))]
    Unknown(String),
    /// The settings are not valid for the fault.
    #[error("{0}")]
    Invalid(String),
}

/// Allows faults in this process (`--faults-enabled`) for `service`, and switches on the
/// `initial` ones (`--fault name=<json>`).
pub fn enable(service: &'static str, initial: &[String]) -> Result<(), FaultError> {
    let _ = REGISTRY.service.set(service);
    REGISTRY.enabled.store(true, Ordering::Release);
    for setting in initial {
        let (name, json) = setting.split_once('=').unwrap_or((setting.as_str(), "{}"));
        if name.trim() == FaultKind::Crash.name() {
            // Set at start it would strike again after every restart: a crash loop.
            return Err(FaultError::Invalid(
                "crash cannot be set at start (it would strike after every restart); \
                 switch it on through the admin port"
                    .to_owned(),
            ));
        }
        set(name.trim(), json.trim().as_bytes())?;
    }
    Ok(())
}

/// Whether this process accepts faults.
pub fn is_enabled() -> bool {
    REGISTRY.enabled.load(Ordering::Acquire)
}

/// Switches on the fault `name` with `json` settings, replacing its earlier settings.
pub fn set(name: &str, json: &[u8]) -> Result<(), FaultError> {
    if !is_enabled() {
        return Err(FaultError::Disabled);
    }
    let kind = FaultKind::parse(name).ok_or_else(|| FaultError::Unknown(name.to_owned()))?;
    let spec: FaultSpec = if json.iter().all(u8::is_ascii_whitespace) {
        FaultSpec::default()
    } else {
        serde_json::from_slice(json)
            .map_err(|error| FaultError::Invalid(format!("settings of {name}: {error}")))?
    };
    let fault = Fault::new(kind, spec).map_err(FaultError::Invalid)?;
    tracing::warn!(fault = name, settings = %fault.describe(), "fault switched on");
    // The gauge moves under the lock, so a PUT and a DELETE racing leave it true.
    let mut active = write_active();
    active.insert(kind, fault);
    crate::metrics::FAULTS_ACTIVE
        .with_label_values(&[service(), kind.name()])
        .set(1);
    Ok(())
}

/// Switches off the fault `name`; switching off one that is off is fine.
pub fn clear(name: &str) -> Result<(), FaultError> {
    if !is_enabled() {
        return Err(FaultError::Disabled);
    }
    let kind = FaultKind::parse(name).ok_or_else(|| FaultError::Unknown(name.to_owned()))?;
    let mut active = write_active();
    if active.remove(&kind).is_some() {
        tracing::warn!(fault = name, "fault switched off");
    }
    crate::metrics::FAULTS_ACTIVE
        .with_label_values(&[service(), kind.name()])
        .set(0);
    Ok(())
}

/// Every fault, with its settings when it is on: what `GET /faults` answers.
pub fn list() -> serde_json::Value {
    let active = read_active();
    let faults: Vec<serde_json::Value> = FaultKind::ALL
        .into_iter()
        .map(|kind| {
            let fault = active.get(&kind);
            serde_json::json!({
                "name": kind.name(),
                "active": fault.is_some(),
                "settings": fault.map(Fault::describe),
            })
        })
        .collect();
    serde_json::json!({ "enabled": is_enabled(), "faults": faults })
}

fn read_active() -> std::sync::RwLockReadGuard<'static, BTreeMap<FaultKind, Fault>> {
    // A poisoned lock only means a panic elsewhere while holding it; the map is still whole.
    REGISTRY
        .active
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_active() -> std::sync::RwLockWriteGuard<'static, BTreeMap<FaultKind, Fault>> {
    REGISTRY
        .active
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `look` at the active fault of `kind`, if any, under the read lock (no copy: the readiness
/// gate asks on every call). Cheap when faults are not enabled: one atomic load.
fn active<T>(kind: FaultKind, look: impl FnOnce(&Fault) -> T) -> Option<T> {
    if !is_enabled() {
        return None;
    }
    read_active().get(&kind).map(look)
}

fn injected(kind: FaultKind) {
    crate::metrics::FAULTS_INJECTED
        .with_label_values(&[service(), kind.name()])
        .inc();
}

/// What the server stack does to one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallFault {
    /// Wait this long first.
    pub(crate) latency: Duration,
    /// Then answer this instead of the handler.
    pub(crate) outcome: CallOutcome,
}

/// How a call hit by a fault ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CallOutcome {
    /// The handler answers.
    Handler,
    /// Answered with this code.
    Error(Code),
    /// Never answered: the deadline ends it.
    Hang,
}

/// The faults a call of `method` meets, if any.
pub(crate) fn for_call(method: &str) -> Option<CallFault> {
    if !is_enabled() {
        return None;
    }
    let active = read_active();
    let mut hit = CallFault {
        latency: Duration::ZERO,
        outcome: CallOutcome::Handler,
    };
    let mut any = false;
    if let Some(fault) = active.get(&FaultKind::Latency)
        && fault.matches_method(method)
        && fault.strikes()
    {
        hit.latency = match fault.latency {
            Latency::Fixed(fixed) => fixed,
            Latency::UpTo(max) => max.mul_f64(fastrand::f64()),
        };
        injected(FaultKind::Latency);
        any = true;
    }
    if let Some(fault) = active.get(&FaultKind::Hang)
        && fault.matches_method(method)
        && fault.strikes()
    {
        hit.outcome = CallOutcome::Hang;
        injected(FaultKind::Hang);
        any = true;
    } else if let Some(fault) = active.get(&FaultKind::Error)
        && fault.matches_method(method)
        && fault.strikes()
    {
        hit.outcome = CallOutcome::Error(fault.code);
        injected(FaultKind::Error);
        any = true;
    }
    any.then_some(hit)
}

/// Whether the database is "down": the health check fails, consumers and the relay wait.
pub fn database_outage() -> bool {
    let outage = active(FaultKind::DatabaseOutage, |_| ()).is_some();
    if outage {
        injected(FaultKind::DatabaseOutage);
    }
    outage
}

/// Whether the consumer's handler must reject this event.
pub(crate) fn poison(event_type: &str) -> bool {
    let hit = active(FaultKind::PoisonEvent, |fault| {
        fault
            .event_type
            .as_deref()
            .is_none_or(|wanted| wanted == event_type)
            && fault.strikes()
    })
    .unwrap_or(false);
    if hit {
        injected(FaultKind::PoisonEvent);
    }
    hit
}

/// How long a delivered event waits before it is applied.
pub(crate) fn event_delay() -> Option<Duration> {
    let delay = active(FaultKind::EventDelay, |fault| fault.delay)?;
    injected(FaultKind::EventDelay);
    Some(delay)
}

/// Whether a fault that acts on event delivery or its transaction is switched on: consumers
/// then handle events one by one, where each of these faults acts per event.
pub(crate) fn event_faults_active() -> bool {
    [
        FaultKind::DatabaseOutage,
        FaultKind::PoisonEvent,
        FaultKind::EventDelay,
        FaultKind::DuplicateDelivery,
        FaultKind::Crash,
    ]
    .into_iter()
    .any(|kind| active(kind, |_| ()).is_some())
}

/// Whether a delivered event is delivered once more.
pub(crate) fn duplicate_delivery() -> bool {
    let hit = active(FaultKind::DuplicateDelivery, Fault::strikes).unwrap_or(false);
    if hit {
        injected(FaultKind::DuplicateDelivery);
    }
    hit
}

/// Aborts the process here if a crash fault names `point` ([`crash_points`]): no drain, no
/// unwinding, nothing flushed, as a killed process.
pub fn crash_point(point: &str) {
    if active(FaultKind::Crash, |fault| fault.point == point).unwrap_or(false) {
        injected(FaultKind::Crash);
        // The one line a crash leaves, on stderr directly: the log pipeline may not flush.
        eprintln!("fault injected: crash at {point} (aborting)");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn settings_are_validated_per_kind() {
        let error = Fault::new(
            FaultKind::Error,
            spec(r#"{"code": "unavailable", "rate": 0.5}"#),
        )
        .expect("valid");
        assert_eq!((error.code, error.rate), (Code::Unavailable, 0.5));
        assert_eq!(
            Fault::new(FaultKind::Error, spec(r#"{"code": "OK"}"#)).map(|_| ()),
            Err(r#"code "OK" is not a gRPC error code (UNAVAILABLE, INTERNAL, …)"#.to_owned())
        );
        assert!(Fault::new(FaultKind::Error, spec(r#"{"code": "14"}"#)).is_ok());
        assert!(Fault::new(FaultKind::Error, spec(r#"{"rate": 2, "code": "INTERNAL"}"#)).is_err());
        assert!(Fault::new(FaultKind::Hang, spec(r#"{"code": "INTERNAL"}"#)).is_err());
        assert!(Fault::new(FaultKind::Latency, spec(r#"{}"#)).is_err());
        assert!(Fault::new(FaultKind::Latency, spec(r#"{"fixed_ms": 60001}"#)).is_err());
        assert!(Fault::new(FaultKind::Crash, spec(r#"{"point": "nowhere"}"#)).is_err());
        assert!(Fault::new(FaultKind::Crash, spec(r#"{"point": "after-commit"}"#)).is_ok());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"bogus": 1}"#).is_err());
    }

    #[test]
    fn code_names_are_the_wire_names() {
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::Ok), "OK");
        for number in 0..=16 {
            let code = Code::from_i32(number);
            assert_eq!(code_named(&code_name(code)), Some(code));
        }
    }

    #[test]
    fn method_patterns() {
        let fault = |method: &str| {
            Fault::new(
                FaultKind::Hang,
                FaultSpec {
                    method: Some(method.into()),
                    ..FaultSpec::default()
                },
            )
            .expect("valid")
        };
        assert!(fault("*").matches_method("GetBook"));
        assert!(fault("Get*").matches_method("GetBook"));
        assert!(!fault("Get*").matches_method("RentBook"));
        assert!(fault("RentBook").matches_method("RentBook"));
        assert!(!fault("RentBook").matches_method("RentBooks"));
    }
}
