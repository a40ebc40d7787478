// RaftCore: placeholder until the module lands.
