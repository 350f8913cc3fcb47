
namespace Pai.Host.Models;

/// <summary>
/// Multi-head self-attention over tokens [N, T, D]: one linear "qkv" D→3D, heads of size D/h
/// attending with softmax(q·kᵀ/√(D/h))·v, and an output linear "proj" D→D. Both weights are prunable.
/// </summary>
public sealed class SelfAttention : Module
{
    readonly Linear qkv, proj;

    /// <summary>Self-attention of width <paramref name="width"/> with <paramref name="heads"/> heads (the width must divide by it).</summary>
    public SelfAttention(long width, int heads, DType dtype = DType.Float32, Device? device = null)
    {
        if (heads < 1 || width % heads != 0)
            throw new ArgumentException($"the width ({width}) must be a multiple of the number of heads ({heads})");
        Width = width;
        Heads = heads;
        qkv = RegisterModule("qkv", new Linear(width, 3 * width, dtype: dtype, device: device));
        proj = RegisterModule("proj", new Linear(width, width, dtype: dtype, device: device));
    }

    /// <summary>Token width D.</summary>
    public long Width { get; }
    /// <summary>Number of heads.</summary>
    public int Heads { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        long n = x.Size(0), t = x.Size(1), headWidth = Width / Heads;
        // [N, T, 3D] → [3, N, heads, T, D/heads]
        var parts = qkv.Forward(x).Reshape(n, t, 3, Heads, headWidth).Permute(2, 0, 3, 1, 4);
        var q = parts.Select(0, 0);
        var k = parts.Select(0, 1);
        var v = parts.Select(0, 2);
        var scores = q.MatMul(k.Transpose(-2, -1)) * (1.0 / Math.Sqrt(headWidth));
        var attended = Functional.Softmax(scores, -1).MatMul(v);          // [N, heads, T, D/heads]
        var merged = attended.Transpose(1, 2).Reshape(n, t, Width);       // [N, T, D]
        return proj.Forward(merged);
    }
}

/// <summary>The transformer MLP: Linear "fc1" D→hidden, GELU, Linear "fc2" hidden→D.</summary>
public sealed class TransformerMlp : Module
{
    readonly Linear fc1, fc2;

    /// <summary>An MLP of width <paramref name="width"/> and hidden size <paramref name="hidden"/>.</summary>
    public TransformerMlp(long width, long hidden, DType dtype = DType.Float32, Device? device = null)
    {
        fc1 = RegisterModule("fc1", new Linear(width, hidden, dtype: dtype, device: device));
        fc2 = RegisterModule("fc2", new Linear(hidden, width, dtype: dtype, device: device));
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => fc2.Forward(Functional.Gelu(fc1.Forward(x)));
}

/// <summary>A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).</summary>
public sealed class TransformerBlock : Module
{
    readonly LayerNorm norm1, norm2;
    readonly SelfAttention attn;
    readonly TransformerMlp mlp;

    /// <summary>A block of width <paramref name="width"/>, <paramref name="heads"/> heads and MLP hidden size <paramref name="mlpHidden"/>.</summary>
    public TransformerBlock(long width, int heads, long mlpHidden, DType dtype = DType.Float32, Device? device = null)
    {
        norm1 = RegisterModule("norm1", new LayerNorm(width, dtype: dtype, device: device));
        attn = RegisterModule("attn", new SelfAttention(width, heads, dtype, device));
        norm2 = RegisterModule("norm2", new LayerNorm(width, dtype: dtype, device: device));
        mlp = RegisterModule("mlp", new TransformerMlp(width, mlpHidden, dtype, device));
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        var h = x + attn.Forward(norm1.Forward(x));
        return h + mlp.Forward(norm2.Forward(h));
    }
}

/// <summary>
/// A small vision transformer (vit-tiny: patch 4, width 192, depth 6, 3 heads, MLP 384): a
/// patch-embedding conv "patch_embed" (kernel = stride = patch, prunable), a class token
/// "cls_token" [1, 1, D] and learned position embeddings "pos_embed" [1, 1 + patches, D] (neither
/// prunable), pre-norm blocks "blocks.i", a final LayerNorm "norm" and the Linear classifier
/// "head" applied to the class token. LayerNorm eps is 1e-5 (torch.nn.LayerNorm's default); no
/// dropout. The class token and position embeddings are drawn from N(0, 0.02²) (the usual ViT
/// choice), other weights follow <see cref="ModelOptions.Init"/>.
/// </summary>
public sealed class VisionTransformer : Model
{
    readonly Conv2d patchEmbed;
    readonly Tensor classToken, positions;
    readonly Sequential blocks;
    readonly LayerNorm norm;
    readonly Linear head;

    /// <summary>A vision transformer named <paramref name="name"/> for <paramref name="options"/>, initialized.</summary>
    /// <param name="name">Model name.</param>
    /// <param name="options">Input shape (height and width at least one patch), classes, initialization, dtype, device.</param>
    /// <param name="patch">Patch size (kernel and stride of the embedding).</param>
    /// <param name="width">Token width D.</param>
    /// <param name="depth">Number of blocks.</param>
    /// <param name="heads">Attention heads.</param>
    /// <param name="mlpHidden">Hidden size of each block's MLP.</param>
    public VisionTransformer(string name, ModelOptions options, int patch, int width, int depth, int heads, int mlpHidden)
        : this(name, options, patch, width, depth, heads, mlpHidden, initialize: true) { }

    VisionTransformer(string name, ModelOptions options, int patch, int width, int depth, int heads, int mlpHidden, bool initialize)
        : base(name, options)
    {
        var shape = options.InputShape;
        if (patch < 1 || shape.Height < patch || shape.Width < patch)
            throw new ArgumentException($"{name} needs images of at least one {patch}x{patch} patch, got {shape}", nameof(options));
        (Patch, Width, Depth, Heads, MlpHidden) = (patch, width, depth, heads, mlpHidden);
        Tokens = (shape.Height / patch) * (shape.Width / patch);
        var (dt, dev) = (options.DType, options.Device);
        classToken = RegisterParameter("cls_token", Libtorch.Zeros([1, 1, width], dt, dev));
        positions = RegisterParameter("pos_embed", Libtorch.Zeros([1, Tokens + 1, width], dt, dev));
        patchEmbed = RegisterModule("patch_embed", new Conv2d(shape.Channels, width, patch, stride: patch, dtype: dt, device: dev));
        blocks = new Sequential();
        for (var i = 0; i < depth; i++) blocks.Add(new TransformerBlock(width, heads, mlpHidden, dt, dev));
        RegisterModule("blocks", blocks);
        norm = RegisterModule("norm", new LayerNorm(width, dtype: dt, device: dev));
        head = RegisterClassifier("head", new Linear(width, options.Classes, dtype: dt, device: dev));
        if (initialize) Initialize(options.Init, options.Seed);
    }

    /// <summary>vit-tiny: patch 4, width 192, depth 6, 3 heads, MLP 384.</summary>
    public static VisionTransformer Tiny(ModelOptions options) => new("vit-tiny", options, patch: 4, width: 192, depth: 6, heads: 3, mlpHidden: 384);

    /// <summary>Patch size.</summary>
    public int Patch { get; }
    /// <summary>Token width.</summary>
    public int Width { get; }
    /// <summary>Number of blocks.</summary>
    public int Depth { get; }
    /// <summary>Attention heads.</summary>
    public int Heads { get; }
    /// <summary>MLP hidden size.</summary>
    public int MlpHidden { get; }
    /// <summary>Patches per image (tokens without the class token).</summary>
    public int Tokens { get; }

    /// <inheritdoc/>
    protected override void InitializeOwnParameters(WeightInit scheme, Generator generator)
    {
        Initialization.FillNormal(classToken, 0.02, generator);
        Initialization.FillNormal(positions, 0.02, generator);
    }

    /// <inheritdoc/>
    protected override Tensor Logits(Tensor inputs)
    {
        RequireImageSize(inputs);
        var n = inputs.Size(0);
        var patches = patchEmbed.Forward(inputs).Flatten(2).Transpose(1, 2);   // [N, T, D]
        var tokens = Libtorch.Cat([classToken.Expand(n, 1, Width), patches], 1) + positions;
        var h = norm.Forward(blocks.Forward(tokens));
        return head.Forward(h.Select(1, 0));
    }

    /// <inheritdoc/>
    protected override Model CreateLike(ModelOptions options) => new VisionTransformer(Name, options, Patch, Width, Depth, Heads, MlpHidden, initialize: false);
}
