"""HTTP plumbing shared by integrations: client factory, retry transport, paginators."""
