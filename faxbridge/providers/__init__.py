"""Provider adapters: Openfax and Phaxio over httpx."""
