"""The Panel dashboard: `panel serve dashboards/` serves dashboards/main.py."""
