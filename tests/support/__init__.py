"""What tests, chaos and bench share: server URLs, genbuf runners, private servers."""
