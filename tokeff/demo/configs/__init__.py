"""The demo's config files, shipped inside the package so that an installed tokeff (not only a
clone) runs `tokeff demo`: `demo.py` (`get_config(arg)`, arg "", "smoke" or "gpu")."""
