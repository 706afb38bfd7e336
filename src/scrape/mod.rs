//! Scraping of Go `net/http/pprof` endpoints (in progress).
