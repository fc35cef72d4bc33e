//! Output formats: readings → InfluxDB line protocol; stored readings → open-data rows,
//! CSV, NGSI-LD, GeoJSON.

mod decimal;
pub mod lineproto;
pub mod opendata;
