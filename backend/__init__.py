"""papercrane's backend: engine, store, storage, executors, runner (and later the
server, its client and the CLI). Importing this package does no work."""
