using System.Runtime.InteropServices;

namespace Pai.Host.Data;

/// <summary>An 8-bit RGB image in memory, rows of interleaved R, G, B bytes (height × width × 3).</summary>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Pixels">Height·Width·3 bytes, row-major, RGB interleaved.</param>
public sealed record RgbImage(int Width, int Height, byte[] Pixels)
{
    /// <summary>The byte offset of pixel (x, y)'s red value.</summary>
    public int Offset(int x, int y) => (y * Width + x) * 3;
}

/// <summary>
/// JPEG decoding and encoding with libjpeg-turbo's TurboJPEG API (Debian's <c>libturbojpeg0</c>),
/// called by P/Invoke. Chosen over SkiaSharp because it decoded 224×224 JPEGs 2.3× faster here
/// (README, "Image folders"), needs no NuGet native package, and can decode at 1/2, 1/4 or 1/8
/// size in the DCT domain. One TurboJPEG handle per thread (handles are not thread-safe); every
/// method may be called from any thread.
/// </summary>
public static class Jpeg
{
    const string Library = "libturbojpeg.so.0";
    /// <summary>
    /// The most pixels a decoded image may have: PIL's decompression-bomb limit (2 × 89478485),
    /// so every JPEG torchvision reads is read here too; at 4 bytes a pixel (CMYK) it still fits one array.
    /// </summary>
    public const long MaxPixels = 2 * 89_478_485;

    const int PixelFormatRgb = 0, PixelFormatCmyk = 11, ColorspaceCmyk = 3, ColorspaceYcck = 4, ErrorWarning = 0;

    [DllImport(Library)] static extern IntPtr tjInitDecompress();
    [DllImport(Library)] static extern IntPtr tjInitCompress();
    [DllImport(Library)] static extern int tjDestroy(IntPtr handle);
    [DllImport(Library)] static extern IntPtr tjGetErrorStr2(IntPtr handle);
    [DllImport(Library)] static extern int tjGetErrorCode(IntPtr handle);
    [DllImport(Library)] static extern void tjFree(IntPtr buffer);
    [DllImport(Library)]
    static extern int tjDecompressHeader3(IntPtr handle, byte[] jpeg, nuint size, out int width, out int height, out int subsampling, out int colorspace);
    [DllImport(Library)]
    static extern int tjDecompress2(IntPtr handle, byte[] jpeg, nuint size, byte[] destination, int width, int pitch, int height, int pixelFormat, int flags);
    [DllImport(Library)]
    static extern int tjCompress2(IntPtr handle, byte[] source, int width, int pitch, int height, int pixelFormat, ref IntPtr jpeg, ref nuint size, int subsampling, int quality, int flags);

    // Handles live as long as their thread; worker threads are few and long-lived.
    [ThreadStatic] static IntPtr decompressor;
    [ThreadStatic] static IntPtr compressor;

    static IntPtr Decompressor() => decompressor != IntPtr.Zero ? decompressor : decompressor = Init(tjInitDecompress);
    static IntPtr Compressor() => compressor != IntPtr.Zero ? compressor : compressor = Init(tjInitCompress);

    static IntPtr Init(Func<IntPtr> init)
    {
        IntPtr h;
        try
        {
            h = init();
        }
        catch (DllNotFoundException e)
        {
            throw new DatasetException($"JPEG decoding needs libjpeg-turbo's TurboJPEG library ({Library}), which was not found: install it with `apt-get install libturbojpeg0` (the build's scripts/bootstrap.sh does this when run as root).", inner: e);
        }
        if (h == IntPtr.Zero) throw new InvalidOperationException($"{Library}: could not create a TurboJPEG handle: {Error(IntPtr.Zero)}");
        return h;
    }

    static string Error(IntPtr handle) => Marshal.PtrToStringAnsi(tjGetErrorStr2(handle)) ?? "unknown error";

    /// <summary>
    /// Decodes a JPEG to RGB. With <paramref name="minSide"/> &gt; 0 the image is decoded at the
    /// smallest DCT scale (1/8, 1/4, 3/8, 1/2 … 1) whose shorter side is still at least
    /// <paramref name="minSide"/>, which is much faster for large photos that are resized down anyway.
    /// Grayscale JPEGs come out as RGB with equal channels; CMYK and YCCK JPEGs (ImageNet has a
    /// few) are converted to RGB. A truncated file ("premature end of JPEG file") is an error;
    /// other libjpeg warnings (e.g. extraneous bytes before a marker) are tolerated, as PIL does.
    /// </summary>
    /// <param name="jpeg">The file's bytes.</param>
    /// <param name="file">The file name, for error messages.</param>
    /// <param name="minSide">Shorter side the decoded image must keep (0: full size).</param>
    /// <exception cref="DatasetException">The bytes are not a decodable JPEG (<see cref="DatasetException.File"/> is <paramref name="file"/>).</exception>
    public static RgbImage Decode(byte[] jpeg, string file, int minSide = 0)
    {
        var h = Decompressor();
        if (jpeg.Length == 0) throw Bad(file, "the file is empty");
        if (tjDecompressHeader3(h, jpeg, (nuint)jpeg.Length, out var width, out var height, out _, out var colorspace) != 0)
            throw Bad(file, Error(h));
        if (width <= 0 || height <= 0) throw Bad(file, $"invalid size {width}x{height}");
        // The header's size is the file's claim, not its content: a few corrupt bytes can claim
        // 65000×65000, which would overflow the pixel count or allocate gigabytes per thread.
        if ((long)width * height > MaxPixels)
            throw Bad(file, $"its header claims {width}×{height} pixels, more than the {MaxPixels} an image may have (PIL's limit)");
        var (w, hh) = ScaledSize(width, height, minSide);
        var cmyk = colorspace is ColorspaceCmyk or ColorspaceYcck;
        var channels = cmyk ? 4 : 3;
        var pixels = new byte[checked(w * hh * channels)]; // at most 4·MaxPixels
        if (tjDecompress2(h, jpeg, (nuint)jpeg.Length, pixels, w, 0, hh, cmyk ? PixelFormatCmyk : PixelFormatRgb, 0) != 0)
        {
            var message = Error(h);
            var truncated = message.Contains("Premature end", StringComparison.OrdinalIgnoreCase);
            if (tjGetErrorCode(h) != ErrorWarning || truncated)
                throw Bad(file, truncated ? $"the file is truncated ({message})" : message);
            ResetDecompressor();
        }
        return new RgbImage(w, hh, cmyk ? CmykToRgb(pixels, w * hh) : pixels);
    }

    // After a failed call a TurboJPEG handle can carry the error into the next image (seen with
    // libjpeg-turbo 2.1): drop it, so the thread's next decode starts from a fresh handle.
    static DatasetException Bad(string file, string reason)
    {
        ResetDecompressor();
        return new($"{file}: cannot decode the image: {reason}. Replace or delete the file, or pass --skip-bad-images to continue without it.", file);
    }

    static void ResetDecompressor()
    {
        if (decompressor == IntPtr.Zero) return;
        tjDestroy(decompressor);
        decompressor = IntPtr.Zero;
    }

    // Scaling factors TurboJPEG supports for decoding, n/8.
    static (int W, int H) ScaledSize(int width, int height, int minSide)
    {
        if (minSide <= 0) return (width, height);
        for (var n = 1; n < 8; n++)
        {
            var w = (width * n + 7) / 8;
            var h = (height * n + 7) / 8;
            if (Math.Min(w, h) >= minSide) return (w, h);
        }
        return (width, height);
    }

    // libjpeg writes Adobe CMYK JPEGs inverted (0 = full ink): R = C·K/255 and likewise for G, B.
    static byte[] CmykToRgb(byte[] cmyk, int count)
    {
        var rgb = new byte[count * 3];
        for (int i = 0, j = 0; i < count; i++, j += 4)
        {
            var k = cmyk[j + 3];
            rgb[3 * i] = (byte)(cmyk[j] * k / 255);
            rgb[3 * i + 1] = (byte)(cmyk[j + 1] * k / 255);
            rgb[3 * i + 2] = (byte)(cmyk[j + 2] * k / 255);
        }
        return rgb;
    }

    /// <summary>Encodes an RGB image as a baseline JPEG with 4:4:4 sampling (tests, benchmarks, data set tools).</summary>
    /// <param name="image">The image.</param>
    /// <param name="quality">JPEG quality, 1..100.</param>
    public static byte[] Encode(RgbImage image, int quality = 95)
    {
        if (quality is < 1 or > 100) throw new ArgumentOutOfRangeException(nameof(quality), quality, "JPEG quality is 1..100");
        if (image.Pixels.Length != 3L * image.Width * image.Height)
            throw new ArgumentException($"{image.Width}x{image.Height} RGB needs {3L * image.Width * image.Height} bytes, got {image.Pixels.Length}", nameof(image));
        var h = Compressor();
        IntPtr buffer = IntPtr.Zero;
        nuint size = 0;
        try
        {
            if (tjCompress2(h, image.Pixels, image.Width, 0, image.Height, PixelFormatRgb, ref buffer, ref size, 0, quality, 0) != 0)
                throw new InvalidOperationException($"JPEG encoding failed: {Error(h)}");
            var bytes = new byte[(int)size];
            Marshal.Copy(buffer, bytes, 0, bytes.Length);
            return bytes;
        }
        finally
        {
            if (buffer != IntPtr.Zero) tjFree(buffer);
        }
    }
}
