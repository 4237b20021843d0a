//! The HTTP layer under the routes: [`listen`] (the accept loop), [`gate`] (what is
//! checked before a body is read) and [`observe`] (request id, log span, metrics and
//! the audit row of every request).

pub mod gate;
pub mod listen;
pub mod observe;
