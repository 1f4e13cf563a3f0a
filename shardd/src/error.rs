//! The engine's typed errors and the one place they map to HTTP status codes.

/// An error a shard operation can return; every variant a user can cause says what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something the collection does not have.
    #[error("Wrong input: {0}")]
    BadRequest(String),
    /// The collection or point does not exist.
    #[error("Not found: {0}")]
    NotFound(String),
    /// The request conflicts with existing state (for example a duplicate collection).
    #[error("Conflict: {0}")]
    Conflict(String),
    /// The request body is larger than the configured limit.
    #[error("Payload too large: {0}")]
    TooLarge(String),
    /// The shard cannot serve now (recovering, or writes disabled after a storage failure).
    #[error("Service unavailable: {0}")]
    Unavailable(String),
    /// Reading or writing the data directory failed.
    #[error("Storage error: {0}")]
    Storage(String),
    /// An upstream (a shard, for the router) did not answer before the deadline.
    #[error("Timeout: {0}")]
    Timeout(String),
}

impl Error {
    /// Shorthand for a [`Error::BadRequest`].
    pub fn bad(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            Error::TooLarge(_) => 413,
            Error::Unavailable(_) => 503,
            Error::Storage(_) => 500,
            Error::Timeout(_) => 504,
        }
    }

    /// The message without the kind's prefix.
    pub fn detail(&self) -> &str {
        match self {
            Error::BadRequest(m)
            | Error::NotFound(m)
            | Error::Conflict(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Storage(m)
            | Error::Timeout(m) => m,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
