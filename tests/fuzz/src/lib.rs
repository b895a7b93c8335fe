//! Shared pieces of ricochet's fuzz targets (`fuzz_targets/*.rs`).
//!
//! libFuzzer hands a target bytes; `arbitrary` turns them into structured inputs. Raw `f64`s
//! would almost never make a valid [`RetryConfig`](ricochet_core::RetryConfig), and a target that
//! only ever sees rejected configs never reaches the engine. So the generators here mostly pick
//! values in (or at the edges of) each field's valid range, and sometimes any bit pattern at all:
//! [`config`] builds configs, [`scenario`] the outcomes and clock steps of a call, and
//! [`http_date`] formats dates for the parsers' round trips. [`policy_file`] is the check the
//! YAML and JSON targets share.

pub mod config;
pub mod http_date;
pub mod policy_file;
pub mod scenario;
