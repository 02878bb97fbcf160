//! The probe engine: builds and sends probes, timestamps them (eBPF first), and
//! correlates replies into results.
