// ConclaveCLI: placeholder until the module lands.
public enum ConclaveCLI { public static func main() {} }
