//! Output formats: readings → InfluxDB line protocol; stored readings → open-data rows,
//! CSV, NGSI-LD, GeoJSON.

pub mod lineproto;
pub mod opendata;
