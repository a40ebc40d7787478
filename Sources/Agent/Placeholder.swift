// Agent: placeholder until the module lands.
