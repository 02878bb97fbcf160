//! What a lab looks like, as plain data: the spec a test writes ([`spec`]), the nodes,
//! links and addresses derived from it ([`plan`]) and the routes every node needs
//! ([`routes`]). Nothing here touches the system, so it is unit-tested without root.

pub mod plan;
pub mod routes;
pub mod spec;
