"""Large artifacts in an object store: the store, an object's location and trust
boundary, the offloaded artifact, when to offload (the cron jobs that move and purge
objects are in genbuffer.operations)."""
