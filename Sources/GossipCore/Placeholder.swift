// GossipCore: placeholder until the module lands.
