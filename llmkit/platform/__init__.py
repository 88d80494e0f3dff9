"""What makes the gateway a shared service: store, keys, tenants, quotas, analytics, admin API."""
