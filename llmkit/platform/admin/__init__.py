"""The admin API (/api/admin/*): keys, tenants, analytics, stats, health; the page comes in a later issue."""
