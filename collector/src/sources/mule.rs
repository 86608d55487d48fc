//! MuleSoft Mule 4 flow logs: [`decode`] reads JSON Logger lines and log4j text; [`normalise`]
//! turns them (and OTLP log records a Mule runtime exported) into `flow_logs` rows, telling
//! request traffic from background work.

pub mod decode;
pub mod normalise;
