"""Static assets of the dashboard (a package only so the wheel ships them)."""
