//! Ingest errors and their disposition: the one place that decides whether a client should
//! retry, and which gRPC code and HTTP status a failure maps to (OTLP specification,
//! "Failures" and "Retryable Response Codes").

/// Whether the client should send the same request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Sending again later may succeed (overload, storage trouble).
    Retryable,
    /// Sending again will fail the same way (bad payload, wrong content type).
    Permanent,
}

/// Why an ingest request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload could not be decoded or is invalid.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The Content-Type is not one seam accepts on this endpoint.
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The Content-Encoding is not one seam accepts.
    #[error("unsupported content encoding {0:?}: send the body uncompressed or with gzip")]
    UnsupportedEncoding(String),
    /// The body (or its decompressed form) is larger than the configured limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which size was exceeded.
        what: &'static str,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The request holds more records than allowed.
    #[error("request holds {count} records, more than the limit of {limit}: send smaller batches")]
    TooManyRecords {
        /// Records in the request.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// seam cannot take more data right now; retry later.
    #[error("seam is overloaded ({0}); retry later")]
    Overloaded(String),
    /// The signal is not supported.
    #[error("{0}")]
    Unimplemented(String),
    /// seam is shutting down.
    #[error("seam is shutting down; retry later")]
    ShuttingDown,
    /// A gateway or flow log input in no format seam knows (the message lists them).
    #[error("unknown format: {0}")]
    UnknownFormat(String),
    /// A failure inside seam (encoding a batch, an unknown table): the data was fine, so the
    /// client must send it again (HTTP 503, gRPC UNAVAILABLE), never drop it.
    #[error("internal error: {0}; retry later")]
    Internal(String),
}

/// Every storage failure is retryable: the data was fine, seam could not keep it right now.
impl From<seam_store::AppendError> for IngestError {
    fn from(e: seam_store::AppendError) -> Self {
        match e {
            seam_store::AppendError::Overloaded(m) => IngestError::Overloaded(m),
            seam_store::AppendError::ShuttingDown => IngestError::ShuttingDown,
            seam_store::AppendError::Internal(m) => IngestError::Internal(m),
        }
    }
}

impl IngestError {
    /// Whether the client should retry.
    pub fn disposition(&self) -> Disposition {
        match self {
            IngestError::Overloaded(_) | IngestError::ShuttingDown | IngestError::Internal(_) => {
                Disposition::Retryable
            }
            _ => Disposition::Permanent,
        }
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::InvalidPayload(_)
            | IngestError::UnknownFormat(_)
            | IngestError::UnsupportedMediaType(_)
            | IngestError::UnsupportedEncoding(_) => tonic::Code::InvalidArgument,
            IngestError::TooLarge { .. } | IngestError::TooManyRecords { .. } => {
                tonic::Code::InvalidArgument
            }
            IngestError::Overloaded(_) | IngestError::ShuttingDown | IngestError::Internal(_) => {
                tonic::Code::Unavailable
            }
            IngestError::Unimplemented(_) => tonic::Code::Unimplemented,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            IngestError::InvalidPayload(_) | IngestError::UnknownFormat(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            IngestError::TooLarge { .. } | IngestError::TooManyRecords { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::Overloaded(_) | IngestError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Unimplemented(_) => StatusCode::NOT_FOUND,
            // 503, not 500: OTLP exporters retry 503 and drop after 500.
            IngestError::Internal(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::InvalidPayload(_) => "invalid_payload",
            IngestError::UnknownFormat(_) => "unknown_format",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::TooManyRecords { .. } => "too_many_records",
            IngestError::Overloaded(_) => "overloaded",
            IngestError::Unimplemented(_) => "unimplemented",
            IngestError::ShuttingDown => "shutting_down",
            IngestError::Internal(_) => "internal",
        }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}
