//! Why an operator command failed: one typed error for every command, each variant the
//! sentence the operator reads after `error: `.

use crate::config::ConfigError;
use crate::deliver::retention;
use crate::deliver::tenants::TenantsError;
use crate::fleet::registry::{EnrolError, RegistryError};
use crate::ops::erase::EraseError;
use crate::ops::service::ServiceError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vigie_core::fleet::UnknownKind;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry file.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registry is missing or unreadable at `check-config`.
    #[error("{0} (the service needs it to start: `devices add` creates it)")]
    NoRegistry(RegistryError),
    /// A file the command reads or writes.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory has no existing parent.
    #[error("gateway.data_dir {}: no existing parent directory", .0.display())]
    NoDataDir(PathBuf),
    /// The data directory cannot be written by whoever runs the command.
    #[error("gateway.data_dir {}: not writable ({}: {source})", dir.display(), probed.display())]
    NotWritable {
        /// `gateway.data_dir`.
        dir: PathBuf,
        /// The directory a file was tried in.
        probed: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `check-config --connect` found problems.
    #[error("check-config --connect: {}", .0.join("; "))]
    Connections(Vec<String>),
    /// The command's own Tokio runtime.
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    /// The man pages and completions.
    #[error("generate: {0}")]
    Generate(std::io::Error),
    /// An identifier given on the command line.
    #[error("{option} {value:?}: {source}")]
    Id {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why.
        source: protocol::TopicError,
    },
    /// A device named other than `tenant/device`.
    #[error("{0:?}: name the device as tenant/device")]
    DeviceName(String),
    /// `devices rotate` of a device that is not enrolled.
    #[error("no device {name} in {}: use `devices add`", registry.display())]
    NotEnrolled {
        /// `tenant/id`.
        name: String,
        /// The registry file.
        registry: PathBuf,
    },
    /// `devices add` of an id that exists.
    #[error(
        "{name} is already enrolled (key epoch {epoch}): nothing changed. `devices rotate` \
         gives it a new key; to enrol another board under this id, `devices remove` it first"
    )]
    AlreadyEnrolled {
        /// `tenant/id`.
        name: String,
        /// Its key epoch.
        epoch: u32,
    },
    /// A device at the last key epoch.
    #[error("{0} is at the last key epoch (2^32-1): enrol the board under a new id")]
    LastEpoch(String),
    /// A command on a device that is not in the registry.
    #[error("no device {name} in {}", registry.display())]
    NoDevice {
        /// `tenant/id`.
        name: String,
        /// The registry file.
        registry: PathBuf,
    },
    /// No system randomness for a key, password or salt.
    #[error("no system randomness for the {what}: {reason}")]
    Random {
        /// What it was for.
        what: &'static str,
        /// Why.
        reason: getrandom::Error,
    },
    /// An enrolment setting, named by the option that carries it.
    #[error("{option}: {source}")]
    Enrol {
        /// The option.
        option: &'static str,
        /// Why.
        source: EnrolError,
    },
    /// An enrolment that failed for no option's fault.
    #[error(transparent)]
    Enrolment(EnrolError),
    /// A metadata option.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The provisioning blob.
    #[error("provisioning blob: {0}")]
    Blob(protocol::provision::ProvisionError),
    /// A device kind in an imported row.
    #[error(transparent)]
    Kind(#[from] UnknownKind),
    /// The `--broker-ca` file.
    #[error("--broker-ca {}: {source}", path.display())]
    BrokerCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `--broker-ca` file holds no certificate.
    #[error("--broker-ca {}: no PEM certificate", .0.display())]
    BrokerCaEmpty(PathBuf),
    /// The deployment's CA or the broker's certificate.
    #[error("{0}")]
    Pki(#[from] crate::fleet::pki::PkiError),
    /// A CSV file of `devices import`.
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// Rows of `devices import` refused (each named on its own line before).
    #[error(
        "{0} rows refused (above): fix them and import the same file again (the rows added \
         are then refused as already enrolled)"
    )]
    ImportRefused(usize),
    /// The running gateway cannot load the saved registry.
    #[error(
        "the registry is saved, but the running gateway cannot load it ({0}); it keeps the \
         previous registry until this is fixed"
    )]
    ReloadRefused(String),
    /// A command that needs the running service's status port.
    #[error("{0} goes through the running service; set http.listen")]
    NoStatusPort(&'static str),
    /// A command that needs the admin token.
    #[error("{0} needs http.admin_token (or VIGIE_ADMIN_TOKEN)")]
    NoAdminToken(&'static str),
    /// The running service refused or did not answer.
    #[error("the gateway service on {addr} refused or did not answer ({source})")]
    Service {
        /// Its status port.
        addr: SocketAddr,
        /// Why.
        source: ServiceError,
    },
    /// The running service's answer does not parse.
    #[error("the service's answer: {0}")]
    Answer(serde_json::Error),
    /// `devices watch --timeout` ran out.
    #[error("nothing more within {}s; {summary}", after.as_secs())]
    WatchTimeout {
        /// The timeout.
        after: Duration,
        /// What was seen.
        summary: String,
    },
    /// `devices edit` without anything to change.
    #[error(
        "nothing to change: give --site, --zone, --latitude, --longitude, --place, --insee, \
         --container or --capacity-l"
    )]
    NothingToChange,
    /// A commune's database server.
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    /// A retention shorter than what the gateway accepts.
    #[error(
        "a retention of {} keeps less than validation.max_age ({}) and a day's margin: \
         readings the gateway accepts would be discarded by the database. Give at least {}, \
         or lower validation.max_age in the config first",
        retention::words(*keeps),
        retention::words(*max_age),
        retention::words(*max_age + retention::MARGIN)
    )]
    RetentionTooShort {
        /// The retention asked for.
        keeps: Duration,
        /// `validation.max_age`.
        max_age: Duration,
    },
    /// `tenants remove` of a commune that still has devices.
    #[error("{devices} devices of {tenant} are in the registry: `devices remove` them first")]
    TenantHasDevices {
        /// The commune.
        tenant: String,
        /// How many devices.
        devices: usize,
    },
    /// `tenants remove --drop-database` of a database other communes write to.
    #[error(
        "database {name} also holds the readings of {}: not dropped (the communes share it \
         through database.tenants)",
        others.join(", ")
    )]
    SharedDatabase {
        /// The database.
        name: String,
        /// The other communes.
        others: Vec<String>,
    },
    /// `erase`.
    #[error(transparent)]
    Erase(#[from] EraseError),
    /// A registry change the group's store did not take: nothing was changed.
    #[error(
        "{0}; nothing was changed (a provisioning blob this command wrote is void: do not flash it)"
    )]
    Group(#[from] crate::ops::group::GroupOpsError),
    /// `export`.
    #[error(transparent)]
    Export(#[from] crate::ops::export::ExportError),
    /// The service itself (`run`).
    #[error(transparent)]
    Run(#[from] crate::RunError),
}

/// A metadata option out of its range (`devices add`, `devices edit`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// `--latitude`.
    #[error("--latitude: WGS84 degrees, -90 to 90")]
    Latitude,
    /// `--longitude`.
    #[error("--longitude: WGS84 degrees, -180 to 180")]
    Longitude,
    /// `--insee`.
    #[error("--insee {0:?}: five digits (2A/2B for Corsica), e.g. 69123")]
    Insee(String),
    /// `--container`.
    #[error("--container {0:?}: one of {all}", all = crate::ops::devices::CONTAINER_CATEGORIES.join(", "))]
    Container(String),
    /// Bin options on an air-quality device.
    #[error("--container and --capacity-l describe a waste bin")]
    NotABin,
}

/// An identifier option, checked by the protocol's rules.
pub fn id(option: &'static str, value: &str) -> Result<(), OpsError> {
    protocol::Id::new(value)
        .map(drop)
        .map_err(|source| OpsError::Id {
            option,
            value: value.to_string(),
            source,
        })
}

/// A file error with its path.
pub fn file(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::File {
        path: path.to_path_buf(),
        source,
    }
}
