"""What a service tells about itself: structlog configuration, correlation and trace context, the
access log and Prometheus metrics."""
