"""SyncNet (syncnet_python), the LSE judge."""
