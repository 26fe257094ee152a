"""The core: the Authenticator and its Session, stage 1, the stacks, the throttle, audit."""
