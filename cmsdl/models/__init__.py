"""Networks (nn.Module) and the LightningModules that train them."""
