"""The migration autopilot (issue 12): the controller each serving process runs (stages applied, one leader
deciding on the report's evidence) and ``strangler rollout``. Its state lives in ``proxy.rollout``."""
