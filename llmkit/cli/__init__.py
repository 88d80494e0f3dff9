"""The `llmkit` command line: one module per subcommand, each thin (flags -> Settings -> core)."""
