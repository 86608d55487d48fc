//! OTLP/gRPC receiver: the `TraceService` and `LogsService` of the OTLP 1.x specification,
//! with gzip, and a `MetricsService` that answers UNIMPLEMENTED.
//!
//! Takes gRPC export requests; gives them to [`Collector`], answering with partial success
//! when some records were invalid, INVALID_ARGUMENT for a bad request and UNAVAILABLE
//! (retryable) under overload.

use std::future::Future;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use seam_auth::SeamListener;
use seam_auth::grpc::GrpcGuard;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::{Collector, Transport};

/// The message a metrics exporter gets.
pub const METRICS_UNSUPPORTED: &str =
    "seam stores traces and logs, not metrics: point your metrics exporter elsewhere";

#[derive(Debug, Clone)]
struct Svc(Arc<Collector>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let out = self
            .0
            .ingest_traces(request.into_inner(), Transport::Grpc)
            .await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let out = self
            .0
            .ingest_logs(request.into_inner(), Transport::Grpc)
            .await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (out.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: out.rejected as i64,
                error_message: out.message.unwrap_or_default(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Err(Status::unimplemented(METRICS_UNSUPPORTED))
    }
}

/// Serves OTLP/gRPC on `listener` (plain or TLS) until `shutdown` resolves, then finishes
/// in-flight calls. Every call passes `guard` first (UNAUTHENTICATED without a valid
/// credential of the ingest role).
///
/// # Errors
/// Transport failures of the server.
pub async fn serve(
    collector: Arc<Collector>,
    listener: SeamListener,
    guard: GrpcGuard,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let max = collector.limits().max_decompressed_bytes;
    let svc = Svc(collector);
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
            guard.clone(),
        ))
        .add_service(InterceptedService::new(
            LogsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max),
            guard.clone(),
        ))
        .add_service(InterceptedService::new(
            MetricsServiceServer::new(svc),
            guard,
        ))
        .serve_with_incoming_shutdown(listener.into_incoming(), shutdown)
        .await
}
