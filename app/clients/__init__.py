"""Who calls the node: the clients file (CLIENTS_FILE) and NODE_API_KEYS as clients, each
with its limits, recognised on every surface."""
