"""ament_python package definition for sole_r1_ros."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sole_r1_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    # the runtime package only: training, synthetic episodes and the tiny-model builder live in
    # sole_r1_tools/ (a developer package of this repo) and never reach a robot's install space
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # closed_loop.launch.py starts developer tools (sole_r1_tools): it runs from a source checkout
        (f"share/{PACKAGE}/launch", ["launch/reward_node.launch.py"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/rigs", glob("config/rigs/*.yaml")),
        (f"share/{PACKAGE}/config/prompts", glob("config/prompts/*.yaml")),
    ],
    package_data={PACKAGE: ["py.typed", "data/default_model/*"]},
    install_requires=["setuptools"],
    zip_safe=False,  # the default model is loaded from a real directory
    maintainer="sole_r1_ros maintainers",
    maintainer_email="maintainers@sole-r1-ros.invalid",
    description="A video-language model as the sole reward for on-robot RL (SOLE-R1) in ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "reward_node = sole_r1_ros.ros.reward_node:main",
            "score_bag = sole_r1_ros.cli.score_bag:main",
            "sole-r1-score = sole_r1_ros.cli.score_clip:main",
        ],
    },
)
