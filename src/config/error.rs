//! Configuration errors: every one names the file and the line.

use std::path::{Path, PathBuf};

/// `pops.yaml:14: duplicate POP id `cn-zj-ct-1` (first defined at line 3)`
#[derive(Debug, thiserror::Error)]
#[error("{}:{}: {}", .file.display(), .line, .message)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line, message: message.into() }
    }
}

/// A problem that does not stop loading: printed as `file:line: warning: message`.
#[derive(Debug, Clone)]
pub struct ConfigWarning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file.display(), self.line, self.message)
    }
}
