"""Flow definitions arrive with the flows issue; the app exists so its home is fixed."""
