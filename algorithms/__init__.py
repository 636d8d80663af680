"""fedlab's built-in methods, one module each, registered as ``fedlab.methods`` entry points."""
