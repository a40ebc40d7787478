// Replication: placeholder until the module lands.
