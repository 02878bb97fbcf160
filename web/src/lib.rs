//! Web UI, JSON API and Prometheus metrics for hopwatch (filled in by the web issue).
