//! Continuous CPU profiling: stack aggregation, symbolization, pprof encoding and
//! export. Filled in by the profiling work ("Continuous CPU profiling: stacks,
//! symbols, pprof, Pyroscope and OTLP profiles, flamegraphs"); the crate exists now
//! so the workspace layout is the one the agent will keep.
