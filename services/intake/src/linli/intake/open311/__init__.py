"""An Open311 GeoReport v2 facade on intake (ADR 0050): one jurisdiction per community.

`mapping` turns the catalogue, needs and their timelines into GeoReport v2 documents
(JSON and XML) and an Open311 submission into the same `NeedSpec` the native API takes;
`api` serves the routes under `/open311/v2`.
"""
