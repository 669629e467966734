"""Launch the SOLE-R1 reward node.

    ros2 launch sole_r1_ros reward_node.launch.py model_path:=/ckpt/SOLE-R1-8B \
        external_topic:=/zed/left/image_rect_color wrist_topic:=/wrist_cam/image_raw

A rig is a params file plus topic remaps (see config/rigs/); nothing in the code changes. Rigs
compose: ``params_file`` is the base (all defaults: config/reward_node.yaml, or a rig) and
``overrides`` a space-separated list of further params files applied after it in order, so a
later file wins for every parameter it sets (what ``--params-file a --params-file b`` does):

    ros2 launch sole_r1_ros reward_node.launch.py \
        params_file:=$(ros2 pkg prefix sole_r1_ros)/share/sole_r1_ros/config/rigs/scene_raw_wrist_jpeg.yaml \
        overrides:="/my/robot/qos.yaml /my/robot/period.yaml"

Each camera's topic parameter says whether it is raw or compressed; ``<role>_topic`` remaps its
raw topic and ``<role>_compressed_topic`` (default ``<role>_topic``/compressed, the
image_transport convention) its compressed one, so only a camera whose rig entry is compressed
listens on a .../compressed topic.
"""

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from sole_r1_ros.ros.launch_args import explicit_parameters


def _node(context: LaunchContext) -> list[Node]:
    overrides = LaunchConfiguration("overrides").perform(context).split()
    given = explicit_parameters(model_path=LaunchConfiguration("model_path").perform(context),
                                use_sim_time=LaunchConfiguration("use_sim_time").perform(context))
    return [Node(
        package="sole_r1_ros",
        executable="reward_node",
        name="sole_r1_reward",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            *overrides,
            *([given] if given else []),  # only the arguments given: a params file's values stand otherwise
        ],
        remappings=[
            ("cameras/external/image_raw", LaunchConfiguration("external_topic")),
            ("cameras/wrist/image_raw", LaunchConfiguration("wrist_topic")),
            ("cameras/external/image_raw/compressed", LaunchConfiguration("external_compressed_topic")),
            ("cameras/wrist/image_raw/compressed", LaunchConfiguration("wrist_compressed_topic")),
            ("goal", LaunchConfiguration("goal_topic")),
        ],
    )]


def generate_launch_description() -> LaunchDescription:
    """The reward node with a params file (plus overrides), a model path and the cameras' and goal's remaps."""
    args = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("sole_r1_ros"), "config", "reward_node.yaml"]),
            description="base node parameters (config/reward_node.yaml or a rig from config/rigs/)",
        ),
        DeclareLaunchArgument("overrides", default_value="",
                              description="space-separated params files applied after params_file (later wins)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="checkpoint directory ('' = the params files' model.path)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for the node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: use /clock (bag replay); '' = the params files' value"),
        DeclareLaunchArgument("external_topic", default_value="cameras/external/image_raw",
                              description="raw topic of the external (scene) camera"),
        DeclareLaunchArgument("wrist_topic", default_value="cameras/wrist/image_raw",
                              description="raw topic of the wrist camera"),
        DeclareLaunchArgument("external_compressed_topic",
                              default_value=[LaunchConfiguration("external_topic"), "/compressed"],
                              description="compressed topic of the external camera (rigs with it compressed)"),
        DeclareLaunchArgument("wrist_compressed_topic",
                              default_value=[LaunchConfiguration("wrist_topic"), "/compressed"],
                              description="compressed topic of the wrist camera (rigs with it compressed)"),
        DeclareLaunchArgument("goal_topic", default_value="goal", description="std_msgs/String goal topic"),
    ]
    return LaunchDescription([*args, OpaqueFunction(function=_node)])
