"""SunRPC grinding: program table, ONC RPC calls, portmapper DUMP."""
