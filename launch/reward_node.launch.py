"""Launch the SOLE-R1 reward node.

    ros2 launch sole_r1_ros reward_node.launch.py model_path:=/ckpt/SOLE-R1-8B \
        external_topic:=/zed/left/image_rect_color wrist_topic:=/wrist_cam/image_raw

A rig is a params file plus topic remaps (see config/rigs/); nothing in the code changes.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    """The reward node with a params file, a model path and the cameras' and goal's remaps."""
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("sole_r1_ros"), "config", "reward_node.yaml"]),
            description="node parameters (config/reward_node.yaml or a rig from config/rigs/)",
        ),
        DeclareLaunchArgument("model_path", default_value="",
                              description="checkpoint directory ('' = built-in default)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("external_topic", default_value="cameras/external/image_raw",
                              description="topic of the external (scene) camera"),
        DeclareLaunchArgument("wrist_topic", default_value="cameras/wrist/image_raw",
                              description="topic of the wrist camera"),
        DeclareLaunchArgument("goal_topic", default_value="goal", description="std_msgs/String goal topic"),
    ]
    node = Node(
        package="sole_r1_ros",
        executable="reward_node",
        name="sole_r1_reward",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"model.path": LaunchConfiguration("model_path"), "use_sim_time": LaunchConfiguration("use_sim_time")},
        ],
        remappings=[
            ("cameras/external/image_raw", LaunchConfiguration("external_topic")),
            ("cameras/wrist/image_raw", LaunchConfiguration("wrist_topic")),
            ("cameras/external/image_raw/compressed", [LaunchConfiguration("external_topic"), "/compressed"]),
            ("cameras/wrist/image_raw/compressed", [LaunchConfiguration("wrist_topic"), "/compressed"]),
            ("goal", LaunchConfiguration("goal_topic")),
        ],
    )
    return LaunchDescription([*args, node])
