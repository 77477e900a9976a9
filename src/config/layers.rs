//! Where each setting comes from: the built-in defaults, then a TOML file,
//! then `CKPT_<SECTION>_<KEY>` environment variables, then command-line
//! flags, each layer over the one before, merged by figment, whose metadata
//! keeps the origin of every value. The file is the one named by `--config`
//! (or `CKPT_CONFIG`), else the first of `$XDG_CONFIG_HOME/ckpt/ckpt.toml`
//! (`~/.config/ckpt/ckpt.toml`) and `/etc/ckpt/ckpt.toml` that exists. A
//! file named explicitly must exist; a default one may be missing.

use super::{Config, OutOfRange, KEYS};
use figment::providers::{Env, Serialized};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest configuration file read (the example is 2 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "CKPT_";

/// Where a value in force came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Origin {
    /// Built into the tool.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A configuration that could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (a missing file named explicitly is one).
    #[error("cannot read config {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The file is not TOML.
    #[error("invalid config {path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong, with its line.
        message: String,
    },
    /// A key the schema does not have, or a value of the wrong type.
    #[error("{key} (from {origin}): {message}")]
    Invalid {
        /// The key, with its table.
        key: String,
        /// Where it came from.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// A number outside its range.
    #[error("{range} (from {origin})")]
    OutOfRange {
        /// The key, the value and the range.
        range: OutOfRange,
        /// Where the value came from.
        origin: Origin,
    },
}

/// One layer: a dictionary of values and the metadata naming its origin.
struct Layer {
    meta: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.meta.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A provider under metadata of ours, so that the origin is told the same
/// way whatever the provider.
struct Renamed<P> {
    inner: P,
    meta: Metadata,
}

impl<P: Provider> Provider for Renamed<P> {
    fn metadata(&self) -> Metadata {
        self.meta.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

const DEFAULT: &str = "default";
const FILE: &str = "file";
const ENV: &str = "env";
const FLAG: &str = "flag";

/// The flags of one command that set keys, each with its name.
#[derive(Default)]
pub struct FlagSet {
    flags: Vec<(&'static str, &'static str, Value)>,
}

impl FlagSet {
    /// Records that `flag` sets `key` (`engine.threads`) to `value`.
    pub fn set(&mut self, key: &'static str, flag: &'static str, value: impl Serialize) {
        // Every value given here is a number, a bool or a name.
        let value = Value::serialize(value).expect("a flag's value serializes");
        self.flags.push((key, flag, value));
    }

    /// Records `flag` for `key` when it was given.
    pub fn opt<T: Serialize>(&mut self, key: &'static str, flag: &'static str, value: Option<T>) {
        if let Some(v) = value {
            self.set(key, flag, v);
        }
    }

    /// Whether `key` was set by a flag.
    pub fn has(&self, key: &str) -> bool {
        self.flags.iter().any(|(k, _, _)| *k == key)
    }
}

/// The layers in force, merged.
#[derive(Clone)]
pub struct Layers {
    figment: Figment,
    file: Option<PathBuf>,
}

fn env_provider() -> Renamed<Env> {
    let env = Env::prefixed(ENV_PREFIX).filter_map(|key| {
        // CKPT_ENGINE_CACHE_PAGES -> engine.cache_pages; variables that do
        // not start with a section (CKPT_CONFIG, CKPT_TRACES) are not keys.
        let (section, rest) = key.as_str().split_once('_')?;
        KEYS.iter()
            .any(|(s, _)| s.eq_ignore_ascii_case(section))
            .then(|| format!("{section}.{rest}").into())
    });
    Renamed {
        inner: env,
        meta: Metadata::named(ENV),
    }
}

/// The default locations of the file, in the order searched.
pub fn default_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").and_then(absolute) {
        paths.push(dir.join("ckpt/ckpt.toml"));
    } else if let Some(home) = std::env::var_os("HOME").and_then(absolute) {
        paths.push(home.join(".config/ckpt/ckpt.toml"));
    }
    paths.push(PathBuf::from("/etc/ckpt/ckpt.toml"));
    paths
}

/// Reads a file of at most [`MAX_CONFIG_BYTES`].
fn read_capped(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.display().to_string(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(text)
}

fn file_layer(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let dict: Dict = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Ok(Layer {
        meta: Metadata::from(FILE, path),
        dict,
    })
}

fn defaults() -> Figment {
    Figment::from(Renamed {
        inner: Serialized::defaults(Config::default()),
        meta: Metadata::named(DEFAULT),
    })
}

impl Layers {
    /// The defaults, the file (`explicit`, else the first default location
    /// that exists), and the environment.
    pub fn load(explicit: Option<&Path>) -> Result<Layers, ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => default_paths().into_iter().find(|p| p.exists()),
        };
        let mut figment = defaults();
        if let Some(p) = &path {
            figment = figment.merge(file_layer(&read_capped(p)?, p)?);
        }
        Ok(Layers {
            figment: figment.merge(env_provider()),
            file: path,
        })
    }

    /// The defaults and configuration text named `name`, without the
    /// environment.
    pub fn from_text(text: &str, name: &str) -> Result<Layers, ConfigError> {
        let path = PathBuf::from(name);
        Ok(Layers {
            figment: defaults().merge(file_layer(text, &path)?),
            file: Some(path),
        })
    }

    /// These layers with the flags over them.
    pub fn with_flags(&self, flags: &FlagSet) -> Layers {
        let mut figment = self.figment.clone();
        for (key, flag, value) in &flags.flags {
            let dict = figment::util::nest(key, value.clone())
                .into_dict()
                .expect("a key with a section nests into a table");
            figment = figment.merge(Layer {
                meta: Metadata::from(FLAG, Source::Custom((*flag).into())),
                dict,
            });
        }
        Layers {
            figment,
            file: self.file.clone(),
        }
    }

    /// The file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Where the value of `key` (`engine.threads`) in force came from.
    pub fn origin(&self, key: &str) -> Origin {
        let Some(meta) = self.figment.find_metadata(key) else {
            return Origin::Default;
        };
        let source = meta.source.as_ref();
        match meta.name.as_ref() {
            FILE => Origin::File(
                source
                    .and_then(Source::file_path)
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            ),
            ENV => Origin::Env(env_name(key)),
            FLAG => Origin::Flag(source.and_then(Source::custom).unwrap_or("?").to_string()),
            _ => Origin::Default,
        }
    }

    /// The configuration: the layers merged, every key known, every value
    /// of its type and within its range.
    pub fn extract(&self) -> Result<Config, ConfigError> {
        let config: Config = self.figment.extract().map_err(|e| self.invalid(e))?;
        config.check().map_err(|range| ConfigError::OutOfRange {
            origin: self.origin(&range.key),
            range,
        })?;
        Ok(config)
    }

    /// Names the key of a figment error and the layer it came from.
    fn invalid(&self, e: figment::Error) -> ConfigError {
        use figment::error::Kind;
        let mut path = e.path.clone();
        let message = match &e.kind {
            Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                if expected.is_empty() {
                    "unknown key".to_string()
                } else {
                    format!("unknown key (known: {})", expected.join(", "))
                }
            }
            Kind::InvalidType(actual, expected) => {
                format!("found {actual}, expected {expected}")
            }
            Kind::InvalidValue(actual, expected) => format!("found {actual}, expected {expected}"),
            Kind::UnknownVariant(actual, expected) => {
                format!("unknown value {actual:?} (known: {})", expected.join(", "))
            }
            Kind::Message(m) => m.clone(),
            other => other.to_string(),
        };
        let key = path.join(".");
        let origin = if key.is_empty() {
            Origin::Default
        } else {
            self.origin(&key)
        };
        // A value that is not a table where a section is expected.
        let key = if key.is_empty() {
            "(top level)".into()
        } else {
            key
        };
        ConfigError::Invalid {
            key,
            origin,
            message,
        }
    }
}

/// The environment variable that sets `key`: `engine.threads` is
/// `CKPT_ENGINE_THREADS`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}
