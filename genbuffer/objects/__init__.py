"""Large artifacts in an object store: the store, the offloaded artifact, orphans."""
