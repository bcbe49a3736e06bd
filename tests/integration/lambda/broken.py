raise ImportError("this handler cannot load: missing dependency 'torch'")
