// StateStore: placeholder until the module lands.
