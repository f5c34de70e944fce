//! The optional configuration file (TOML) and the commented default one
//! (`botlinkd config default`).
//!
//! A file is applied by turning each of its settings into the matching command-line flag,
//! unless that flag was given or its `BOTLINKD_…` variable is set: so a flag beats the
//! environment, the environment beats the file, and the file beats the defaults. The keys are
//! the flags' long names with underscores; the known keys come from the command line's own
//! definition, so the two cannot drift apart.
//!
//! [`requested`] finds the file's name (the flag wins over `BOTLINKD_CONFIG`);
//! [`flags_from_file`] / [`flags_from_text`] read the TOML table and turn each key into
//! `--key-with-dashes VALUE` (lists joined with commas, an empty value dropped), refusing a
//! key that is not among the known ones and a value that is not a scalar or a list of
//! scalars. [`DEFAULT`] is `default-config.toml`, embedded with `include_str!`: every settable
//! flag at its default (`public_url` commented out, it has none).
//!
//! Why more flags, rather than a second configuration model with its own types, defaults and
//! checks: the precedence (flag, environment, file, default) falls out of it, and every value
//! is checked and reported by clap exactly as the flag would be. The price: an empty string or
//! list in the file means "not set", so `retry_schedule = ""` cannot mean "no retries" there
//! as `--retry-schedule ''` does; `serve` keys are dropped for other commands; and settings
//! that are not flags (`BOTLINKD_LOG`) stay out of the file.

use std::ffi::OsString;
use std::path::Path;

/// The commented default configuration, embedded in the binary.
pub const DEFAULT: &str = include_str!("default-config.toml");

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML.
    #[error("the configuration file {path} is not valid TOML: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// It names a setting that does not exist.
    #[error("unknown setting `{key}` in {path}; known settings: {known}")]
    UnknownKey {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The known keys.
        known: String,
    },
    /// A value is not a string, number, boolean or list of those.
    #[error("setting `{key}` in {path} must be a string, a number, a boolean or a list of them")]
    BadValue {
        /// The file.
        path: String,
        /// The key.
        key: String,
    },
}

/// The file named by `--config FILE` / `--config=FILE` in `args` or by `BOTLINKD_CONFIG`.
pub fn requested(args: &[OsString], env: Option<OsString>) -> Option<OsString> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().cloned();
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(value.into());
        }
    }
    env
}

/// Reads `path` and returns the flags it stands for, as `(key, ["--key", "value"])`.
pub fn flags_from_file(path: &Path, known: &[String]) -> Result<Vec<(String, Vec<OsString>)>, ConfigFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: shown.clone(),
        source,
    })?;
    flags_from_text(&text, &shown, known)
}

/// The flags a TOML text stands for (see [`flags_from_file`]).
pub fn flags_from_text(
    text: &str,
    shown: &str,
    known: &[String],
) -> Result<Vec<(String, Vec<OsString>)>, ConfigFileError> {
    let table: toml::Table = toml::from_str(text).map_err(|source| ConfigFileError::Parse {
        path: shown.into(),
        source,
    })?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if !known.contains(&flag) {
            return Err(ConfigFileError::UnknownKey {
                path: shown.into(),
                key,
                known: known.iter().map(|k| k.replace('-', "_")).collect::<Vec<_>>().join(", "),
            });
        }
        let bad = || ConfigFileError::BadValue {
            path: shown.into(),
            key: key.clone(),
        };
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        let value = match &value {
            // An empty list means "none": leave the flag's own default (which is none).
            toml::Value::Array(items) if items.is_empty() => continue,
            toml::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?
                .join(","),
            other => scalar(other).ok_or_else(bad)?,
        };
        flags.push((key, vec![format!("--{flag}").into(), value.into()]));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["listen", "retention", "webhook-allow-cidrs", "database-url"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn settings_become_flags() {
        let flags = flags_from_text(
            "listen = \"0.0.0.0:9000\"\nwebhook_allow_cidrs = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n",
            "test",
            &known(),
        )
        .unwrap();
        let args: Vec<Vec<OsString>> = flags.into_iter().map(|(_, f)| f).collect();
        assert!(args.contains(&vec!["--listen".into(), "0.0.0.0:9000".into()]));
        assert!(args.contains(&vec!["--webhook-allow-cidrs".into(), "127.0.0.0/8,10.0.0.0/8".into()]));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(matches!(
            flags_from_text("lisen = \"x\"", "t", &known()),
            Err(ConfigFileError::UnknownKey { .. })
        ));
        assert!(matches!(
            flags_from_text("listen = { a = 1 }", "t", &known()),
            Err(ConfigFileError::BadValue { .. })
        ));
        assert!(matches!(
            flags_from_text("listen = ", "t", &known()),
            Err(ConfigFileError::Parse { .. })
        ));
    }

    #[test]
    fn the_config_flag_is_found_in_either_form() {
        let args: Vec<OsString> = ["botlinkd", "--config", "a.toml", "serve"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(requested(&args, None), Some("a.toml".into()));
        let args: Vec<OsString> = ["botlinkd", "serve", "--config=b.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(requested(&args, None), Some("b.toml".into()));
        assert_eq!(requested(&[], Some("c.toml".into())), Some("c.toml".into()));
    }
}
