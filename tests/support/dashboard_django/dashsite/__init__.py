"""A Django site for the dashboard's browser tests (tests/test_dashboard_browser.py)."""
