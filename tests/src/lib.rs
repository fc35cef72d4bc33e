//! Harness for the end-to-end suite (real Mosquitto, InfluxDB 1.x, VictoriaMetrics),
//! filled by the end-to-end issue. Tests live in `tests/tests/`.
