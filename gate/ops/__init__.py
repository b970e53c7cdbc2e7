"""What runs beside the request path: alerts, the JetPatch console sync, Prometheus
metrics, and the wiring that starts them."""
