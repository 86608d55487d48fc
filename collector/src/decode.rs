//! Stage 2, decode: request bytes to OTLP request messages.
//!
//! Takes a body (already size-checked and inflated) and its content type; gives an
//! `Export{Trace,Logs}ServiceRequest` from `opentelemetry-proto`'s generated types, or an
//! [`IngestError::InvalidPayload`] saying what is wrong and where. Pure and synchronous.

pub mod json_stream;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::error::IngestError;

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// Reads a Content-Type header value (parameters such as `charset` are ignored).
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, IngestError> {
        let raw = ct.unwrap_or("");
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(IngestError::UnsupportedMediaType(raw.to_string())),
        }
    }

    /// The Content-Type to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Decodes an OTLP trace export request.
pub fn traces(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, IngestError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            IngestError::InvalidPayload(format!(
                "protobuf body is not an ExportTraceServiceRequest: {e}"
            ))
        }),
        Encoding::Json => {
            crate::sources::otlp::decode_json::decode(body, "ExportTraceServiceRequest")
        }
    }
}

/// Decodes an OTLP logs export request.
pub fn logs(body: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, IngestError> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body).map_err(|e| {
            IngestError::InvalidPayload(format!(
                "protobuf body is not an ExportLogsServiceRequest: {e}"
            ))
        }),
        Encoding::Json => {
            crate::sources::otlp::decode_json::decode(body, "ExportLogsServiceRequest")
        }
    }
}
