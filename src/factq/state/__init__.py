"""Everything factq keeps in Redis: see `factq.state.store.Store`."""
